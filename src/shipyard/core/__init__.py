"""Pure logic: no I/O. Graphs, change detection, plans, secret rules, health judgement."""
