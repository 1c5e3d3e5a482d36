"""Start the faceres web demo: `python app.py` (same as `faceres app`). Options: --help."""

from faceres.webapp import main

if __name__ == "__main__":
    main()
