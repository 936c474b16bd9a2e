"""unsloth_course: the shared library of the five fine-tuning notebooks."""
