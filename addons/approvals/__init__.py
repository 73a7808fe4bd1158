"""Approvals: the addon that holds calls, the held calls and grants, the decision ledger, and the admin API."""
