"""Quality: image-quality metrics (MRQy), batch effects, segmentation fusion and ensemble alarms."""
