"""The policy pipeline, one small module per step (eligibility, consent, caps, budgets, uncertainty, exploration, slates)."""
