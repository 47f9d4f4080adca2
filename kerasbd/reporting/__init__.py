"""Reporting: the result objects every method returns, markdown tables, and the methods' figures and tables.

Algorithm modules compute; this package renders. ``figures.figures_for(result)`` draws a result's pictures
from what the method and the framework's measurements recorded, ``triggers.trigger_match`` compares reversed
triggers with a known one.
"""

from kerasbd.reporting.results import DefenseResult, InspectionResult, markdown_table, save_folder

__all__ = ["DefenseResult", "InspectionResult", "markdown_table", "save_folder"]
