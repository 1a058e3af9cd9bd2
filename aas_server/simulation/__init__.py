"""What-if simulation of a process twin: a discrete-event model of a line, run forward (issue 14).

Layer 1, pure: model building (``description``, ``twin``), the SimPy model of a line (``model``),
result statistics (``statistics``) and the replication runner (``runner``). It never imports a
connector, so a simulation cannot touch a device or a live value; see ``docs/simulation.md``.
"""
