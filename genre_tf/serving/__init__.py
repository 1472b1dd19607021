"""A trained run at work: the in-graph audio front end, export, predict, batching, the HTTP app and page."""
