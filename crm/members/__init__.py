"""Companies, contacts, networks and activities: the staff CRM."""
