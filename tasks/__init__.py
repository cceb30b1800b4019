"""Built-in tasks, one file each; every module here is imported by the task registry."""
