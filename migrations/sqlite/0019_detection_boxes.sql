-- A detector's boxes (outputs.kind = "detection"): on each frame output, the boxes the model
-- found on that frame; on each finding, the key image's boxes of its label that score at least
-- the label's positive threshold. JSON [{"x0", "y0", "x1", "y1", "score", "label", "area_mm2"}],
-- corners in the source frame's image coordinates (pixels, (0, 0) the top left corner of the
-- top left pixel), best first; '[]' for a classifier.
ALTER TABLE slice_results ADD COLUMN boxes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE findings ADD COLUMN boxes TEXT NOT NULL DEFAULT '[]';
