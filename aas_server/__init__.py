"""Industrial digital-twin hub: AAS v3 over REST (IDTA Part 2) and OPC UA, fed by legacy devices."""

__version__ = "0.1.0"
