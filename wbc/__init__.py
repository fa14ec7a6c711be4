"""WBC-specific helpers behind WBC.py: dataset walker, LISC import, synthetic smears."""
