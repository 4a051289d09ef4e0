-- Input drift (admin::drift): what a model's input looked like. On each frame output, and per
-- study and model (the mean of the result's images), JSON {"histogram": [10 fractions of the
-- first channel's windowed values in 0..1, bins of 0.1], "pixel_spacing": mm (row spacing),
-- "slice_thickness": mm}, the last two absent when the header has none; NULL in rows written
-- before, and for a result without images. Figures only, no identifier.
ALTER TABLE slice_results ADD COLUMN input_stats TEXT;
ALTER TABLE study_results ADD COLUMN input_stats TEXT;
