"""The limetask operator: turns LimeTasks into Jobs and mirrors their state back."""
