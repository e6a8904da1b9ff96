from rest_framework.pagination import PageNumberPagination


class PagePagination(PageNumberPagination):
    """?page=N&page_size=M (up to 500), 50 by default."""

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
