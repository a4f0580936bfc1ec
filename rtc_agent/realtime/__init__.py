"""The Realtime side: dialects, the conversation state machine, the WebSocket client."""
