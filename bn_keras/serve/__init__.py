"""Serving: `export` writes SavedModels in TF Serving's versioned layout and loads them;
`images` turns PNG and JPEG files into their input."""
