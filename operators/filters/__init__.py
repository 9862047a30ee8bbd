"""Row steps that decide which documents stay: URL blocklists, the Gopher / C4 / FineWeb heuristics,
benchmark decontamination."""
