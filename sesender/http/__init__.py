"""The HTTP front end: a quart-trio app served by hypercorn as one actor of the supervisor."""
