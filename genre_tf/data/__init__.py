"""The dataset: an index of tracks (id, path, label, split), the splits made by track, demo audio."""
