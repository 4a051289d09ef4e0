-- Issue 16: the series a model's result comes from (de-identified Series Instance UID), picked
-- by the manifest's series rules when a study holds several that qualify. NULL for results
-- without images (not applicable, failed before any inference) and for results saved earlier.
ALTER TABLE study_results ADD COLUMN series_instance_uid TEXT;
