"""Events: seminars, network meetings and course packages; registration, waitlist,
attendance and certificates."""
