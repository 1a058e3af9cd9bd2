"""Analytics over the twin's values (layer 1, pure): monitoring rules and alarms, machine states and
ISO 22400-2 KPIs, anomaly detection and remaining useful life. Fed by the change bus, wired in
``runtime/``, exposed by the existing edges."""
