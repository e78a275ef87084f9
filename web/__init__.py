"""The HTTP edge the modules share: strict body decoding (and, later, access and limits)."""
