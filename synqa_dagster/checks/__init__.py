"""Asset checks: funnel invariants (ERROR, blocking) and the toxicity slice escalation."""
