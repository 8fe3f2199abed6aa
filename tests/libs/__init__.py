"""Real client libraries against real servers, on goroutines (issue 17, item 5)."""
