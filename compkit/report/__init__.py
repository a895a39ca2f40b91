"""9. report/: where a model is wrong, as a static HTML page (`compkit inspect`), built from the artifacts.

retrieved (each OOF query's cached neighbour lists, on the OOF CSV's rows), match and identify (the scores
and the worst examples of each task), content (what the report says), page (its HTML), build (write_report).
"""
