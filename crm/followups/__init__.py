"""Follow-ups: things staff must do about a company or contact by a date (call back,
send an offer), assigned to a user, with a morning email digest."""
