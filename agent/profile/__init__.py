"""A user's personalisation profile and the preference statements that change it."""
