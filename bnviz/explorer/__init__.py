"""What the app's pages show, built without Streamlit: configs → runs → plain reports → plotly figures.

Dependencies point one way: ``app_pages`` → ``bnviz.explorer`` → ``bnviz``. Nothing here imports
streamlit, and no library module imports this package (the command-line tools may).
"""
