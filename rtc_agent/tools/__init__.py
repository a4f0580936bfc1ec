"""Tools the model can call: a registry of async functions, and the search tool."""
