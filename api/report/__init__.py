"""The monthly capacity-planning report: SVG charts (`svg`), text (`fmt`), the page (`html`)."""
