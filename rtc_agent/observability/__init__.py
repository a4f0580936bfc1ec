"""What operators see: Prometheus metrics, one record per call, the call log."""
