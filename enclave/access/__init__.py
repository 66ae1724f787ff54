"""access: who is calling (API keys and roles) and what they may use (grants)."""
