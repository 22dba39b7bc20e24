"""Built-in UniCTR plugins, registered exactly like third-party ones."""
