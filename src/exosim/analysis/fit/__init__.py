"""analysis/fit"""
