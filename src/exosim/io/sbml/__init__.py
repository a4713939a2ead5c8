"""io/sbml"""
