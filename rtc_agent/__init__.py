"""rtc-agent: a WebRTC media server for speech-to-speech Realtime agents."""
