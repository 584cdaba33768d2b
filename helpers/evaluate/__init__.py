"""The evaluation wing (notebook 06): the FoodieQA split, scoring, the comparison table and plots."""
