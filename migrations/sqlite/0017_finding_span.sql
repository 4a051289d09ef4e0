-- A volume's finding stands on a run of adjacent slices (aggregate "adjacent"): the slices, in
-- order, each with its activation map of the label, as JSON [{"instance_id", "frame", "cam"}];
-- '[]' for a finding on one image. The Parametric Map of the finding has a frame per slice.
ALTER TABLE findings ADD COLUMN span TEXT NOT NULL DEFAULT '[]';
