"""`pmc`: the operator's command line (status, dead letters, one live look-up, admins)."""
