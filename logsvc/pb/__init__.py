"""The Perspective Broker listener: L{login} (root, factory) and L{avatar} (remote methods)."""
