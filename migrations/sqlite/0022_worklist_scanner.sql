-- The scanner a study's result comes from (Manufacturer, Manufacturer's Model Name and, for CT,
-- Convolution Kernel of its key image, as de-identification keeps them): live performance and
-- drift per scanner. NULL: not known (results from before, or a header without them).
ALTER TABLE worklist ADD COLUMN scanner TEXT;
