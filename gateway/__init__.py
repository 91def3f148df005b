"""Reference WebSocket gateway for live trip updates.

Riders subscribe to a trip, drivers publish locations for it, and Redis pub/sub
carries each update to whichever gateway instance the subscribers are on, so
any number of gateway replicas can run behind a plain TCP/HTTP load balancer.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
