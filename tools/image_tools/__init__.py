"""Tools Airflow never imports: sample images, and the conversion of the offline ImageNet checkpoint
into Keras weights (with its reader of the legacy checkpoint format)."""
