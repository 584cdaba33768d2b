"""The data wing: synthetic FoodieQA, FoodieQA -> LLaVA conversion, checks, faults, views, what XTuner builds."""
