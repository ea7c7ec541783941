"""teacher_infer package."""
