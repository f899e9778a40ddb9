"""The desired state's sources in the UI: the Git definitions and the Cortex catalog, merged."""
