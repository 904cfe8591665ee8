"""How much runs at once: account admission, team budgets, pools and their shares."""
