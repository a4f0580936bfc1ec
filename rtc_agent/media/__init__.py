"""The media path: caller audio in (`inbound`), agent audio out (`playout`)."""
