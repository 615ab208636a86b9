"""A credgate adapter for the Shenzhen housing provident fund centre (深圳市住房公积金管理中心)."""
