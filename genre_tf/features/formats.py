"""The audio containers genre_tf decodes (libsndfile through soundfile), by file extension."""

AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".au", ".flac", ".ogg", ".mp3")
