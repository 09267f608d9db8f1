"""SavedModels that TF Serving loads as they are: versioned atomic publishing
(`publish`), the GPT serving graph (`gpt`) and TF Serving's models.config (`tf_serving`).
Task-specific archives (a classifier's) live with their task and publish through here."""
