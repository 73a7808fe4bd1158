"""The pure-Python reference of the classification core: what toolgate's rule engine did before
the per-value work moved to Rust (core/). Used only by the differential tests, which hold the
native core to exactly these findings, masks and decisions."""
