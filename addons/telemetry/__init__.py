"""What the gateway tells operators about itself: Prometheus metrics (and, later, traces)."""
