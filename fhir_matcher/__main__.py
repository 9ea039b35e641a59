import sys

from fhir_matcher.cli import main  # absolute: spark-submit runs this file as a script

sys.exit(main())
