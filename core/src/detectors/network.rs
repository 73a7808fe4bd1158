//! Network identifiers: IPv4 and IPv6 addresses (being ported: see the reference).

use super::Detector;

pub fn detectors() -> [&'static dyn Detector; 0] {
    []
}
